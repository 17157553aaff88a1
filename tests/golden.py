"""Hand-computed values shared by the tests (one place for every golden number).

Paper defaults (Umeda & Iiduka 2025): b0 = 8, eta0 = 0.1, eps0 = 0.5, delta = 2, gamma = 1.4,
tau = 1000, b_max = 4096. Stage m has b_m = 8 * 2**m, eta_m = 0.1 * 1.4**m and
eps_m = 0.5 * sqrt(8 / b_m) = 0.5 / sqrt(2)**m, worked out by hand below.
"""

import math

PAPER_STAGES = [  # (m, b_m, eta_m, eps_m)
    (0, 8, 0.1, 0.5),
    (1, 16, 0.14, 0.5 / math.sqrt(2)),
    (2, 32, 0.196, 0.25),
    (3, 64, 0.2744, 0.125 * math.sqrt(2)),
    (4, 128, 0.38416, 0.125),
    (5, 256, 0.537824, 0.0625 * math.sqrt(2)),
    (6, 512, 0.7529536, 0.0625),
    (7, 1024, 1.05413504, 0.03125 * math.sqrt(2)),
    (8, 2048, 1.475789056, 0.03125),
    (9, 4096, 2.0661046784, 0.015625 * math.sqrt(2)),
]

# (L, sigma2, gap, eta, eps) -> C1, C2, b*, K(b*), N(b*)
#   L=1, s2=1, gap=1, eta=1:   C1 = 2*1/(1*(2-1)) = 2,  C2 = 1*1*1/(2-1) = 1
#   eps = 0.5: b* = 2*1/0.25 = 8, K(b*) = 2*2/0.25 = 16, N(b*) = 4*2*1/0.0625 = 128
#   L=2, s2=4, gap=3, eta=0.5: L*eta = 1, C1 = 6/(0.5*1) = 12, C2 = 2*4*0.5/1 = 4
#   eps = 0.1: b* = 8/0.01 = 800, K(b*) = 24/0.01 = 2400, N(b*) = 4*12*4/1e-4 = 1.92e6
#   L=1, s2=1, gap=1, eta=0.1: C1 = 2/(0.1*1.9) = 200/19, C2 = 0.1/1.9 = 1/19
#   eps = 0.5: b* = (2/19)/0.25 = 8/19, K(b*) = 2*(200/19)/0.25 = 1600/19, N(b*) = 4*(200/19)*(1/19)/0.0625
COMPLEXITY_TABLE = [
    dict(L=1.0, sigma2=1.0, gap=1.0, eta=1.0, eps=0.5, C1=2.0, C2=1.0, b_star=8.0, K=16.0, N=128.0),
    dict(L=2.0, sigma2=4.0, gap=3.0, eta=0.5, eps=0.1, C1=12.0, C2=4.0, b_star=800.0, K=2400.0, N=1.92e6),
    dict(L=1.0, sigma2=1.0, gap=1.0, eta=0.1, eps=0.5, C1=200 / 19, C2=1 / 19, b_star=8 / 19, K=1600 / 19,
         N=4 * (200 / 19) * (1 / 19) / 0.0625),
]

# K(b) and N(b) off the critical point: L=2, s2=4, gap=3, eta=0.5, eps=0.1, b=1600:
#   K = 12*1600/(0.01*1600 - 4) = 19200/12 = 1600, N = 1600*1600 = 2.56e6; b = 400 = C2/eps^2: unreachable.
OFF_CRITICAL = dict(L=2.0, sigma2=4.0, gap=3.0, eta=0.5, eps=0.1, b=1600.0, K=1600.0, N=2.56e6, b_min=400.0)

# Without replacement, n = 1000, L=s2=gap=eta=1, eps=0.5: b* = 2*C2*n/(eps^2 (n-1) + C2) = 2000/250.75
WITHOUT_REPLACEMENT = dict(n=1000, b_star=2000 / 250.75)
