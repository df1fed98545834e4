"""Evaluation: metrics (PSNR/SSIM as each published protocol defines them), the protocols and
the evaluation loop, published numbers to compare with, and result/report writers."""
