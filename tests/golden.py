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

# -- policies of sfotheory.policies: decisions on short statistic sequences, worked by hand -----------------
# Each row: (statistics of the step, event name, b after the step, eta after the step).
NAN = float("nan")

# Norm test, theta = 0.5 (theta^2 = 0.25), b0 = 4, b_max = 64, with replacement (c_b = 1):
#   1: 2/4 = 0.5 > 0.25*1 fails; b' = ceil(2/0.25) = 8
#   2: 2/8 = 0.25 <= 0.25 passes
#   3: 3/8 = 0.375 > 0.25*0.5 = 0.125 fails; b' = ceil(3/0.125) = 24
#   4: ||g_B||^2 = nan: blocked
#   5: 5/24 > 0.25*0.01 = 0.0025 fails; b' = ceil(5/0.0025) = 2000, capped at 64
#   6: fails again at b = b_max = 64: AT_MAX
NORM_TEST = dict(
    policy=dict(b0=4, eta0=0.1, theta=0.5, b_max=64),
    steps=[(dict(grad_sq=1.0, trace_var=2.0), "ADVANCED", 8, 0.1),
           (dict(grad_sq=1.0, trace_var=2.0), "CHECKED", 8, 0.1),
           (dict(grad_sq=0.5, trace_var=3.0), "ADVANCED", 24, 0.1),
           (dict(grad_sq=NAN, trace_var=3.0), "NONFINITE", 24, 0.1),
           (dict(grad_sq=0.01, trace_var=5.0), "ADVANCED", 64, 0.1),
           (dict(grad_sq=0.01, trace_var=5.0), "AT_MAX", 64, 0.1)],
)
# Without replacement from n = 100: c_4 = 0.96, 0.96*2/4 = 0.48 > 0.25 fails;
#   b' = ceil(2/(0.25 + 2/100)) = ceil(7.407...) = 8 (c_8*2/8 = 0.92*0.25 = 0.23 <= 0.25; b = 7 gives 0.2657 > 0.25)
NORM_TEST_WITHOUT_REPLACEMENT = dict(n=100, b_next=8)

# Augmented inner-product test, theta = 0.5, nu = 1, b0 = 4, b_max = 100 (V_perp = tr S - V_ip/||g||^2, >= 0):
#   1: inner 1/4 = 0.25 <= 0.25*1 = 0.25; V_perp = 2 - 1 = 1, 1/4 <= 1*1: both pass
#   2: inner 4/4 = 1 > 0.25 fails (V_perp = max(2 - 4, 0) = 0 passes); b' = max(ceil(4/0.25), 0) = 16
#   3: inner 0.5/16 = 0.03125 <= 0.25*0.25 passes; V_perp = 20 - 0.5/0.5 = 19, 19/16 > 1*0.5 fails;
#      b' = max(ceil(0.5/0.0625) = 8, ceil(19/0.5) = 38) = 38
#   4: g_B = 0: inner 0 <= 0 passes; V_perp = tr S = 3 > 0 fails; b' = 3/0 = inf, capped at 100
#   5: V_ip = inf: blocked
INNER_PRODUCT_TEST = dict(
    policy=dict(b0=4, eta0=0.1, theta=0.5, nu=1.0, b_max=100),
    steps=[(dict(grad_sq=1.0, trace_var=2.0, inner_var=1.0), "CHECKED", 4, 0.1),
           (dict(grad_sq=1.0, trace_var=2.0, inner_var=4.0), "ADVANCED", 16, 0.1),
           (dict(grad_sq=0.5, trace_var=20.0, inner_var=0.5), "ADVANCED", 38, 0.1),
           (dict(grad_sq=0.0, trace_var=3.0, inner_var=0.0), "ADVANCED", 100, 0.1),
           (dict(grad_sq=1.0, trace_var=3.0, inner_var=float("inf")), "NONFINITE", 100, 0.1)],
)

# Gradient noise scale, smoothing beta = 0.5, b0 = 4, b_max = 64, lr_mode "optimal" (eta = 0.2 b/(b + B)):
#   |G|^2^ = ||g||^2 - trS/b; EMAs start at 0; B = ema_var/ema_sq when ema_sq > 0
#   1: |G|^2^ = 2 - 4/4 = 1: ema_sq = 0.5, ema_var = 2, B = 4, b = max(4, 4) = 4; eta = 0.2*4/8 = 0.1
#   2: |G|^2^ = 1.5 - 8/4 = -0.5: ema_sq = 0.25 - 0.25 = 0 (not > 0): unused; ema_var = 1 + 4 = 5
#   3: |G|^2^ = 1.25 - 4/4 = 0.25: ema_sq = 0.125, ema_var = 2.5 + 2 = 4.5, B = 36: b = 36, eta = 0.2*36/72 = 0.1
#   4: tr S = nan: blocked
#   5: |G|^2^ = 1 - 36/36 = 0: ema_sq = 0.0625, ema_var = 2.25 + 18 = 20.25, B = 324: b = 64 (cap),
#      eta = 0.2*64/388
#   6: |G|^2^ = 1 - 64/64 = 0: ema_sq = 0.03125, ema_var = 10.125 + 32 = 42.125, B = 1348 > b = b_max: AT_MAX,
#      eta = 0.2*64/1412
NOISE_SCALE = dict(
    policy=dict(b0=4, eta0=0.2, b_max=64, smoothing=0.5, lr_mode="optimal"),
    steps=[(dict(grad_sq=2.0, trace_var=4.0), "CHECKED", 4, 0.1),
           (dict(grad_sq=1.5, trace_var=8.0), "CHECKED", 4, 0.1),
           (dict(grad_sq=1.25, trace_var=4.0), "ADVANCED", 36, 0.1),
           (dict(grad_sq=1.0, trace_var=NAN), "NONFINITE", 36, 0.1),
           (dict(grad_sq=1.0, trace_var=36.0), "ADVANCED", 64, 0.2 * 64 / 388),
           (dict(grad_sq=1.0, trace_var=64.0), "AT_MAX", 64, 0.2 * 64 / 1412)],
    noise_scales=[4.0, 4.0, 36.0, 36.0, 324.0, 1348.0],
)

# AdaScale, base batch 2, scale S = 4 (b = 8), eta0 = 0.1, smoothing 0 (each average is the latest value),
# milestones (3,) with decay 0.5, horizon 10, eta_max = 0.3. sigma^2 = trS/2, mu^2 = ||g||^2 - trS/8:
#   1: trS = 2, mu^2 = 1.25 - 0.25 = 1: r = (1 + 1)/(0.25 + 1) = 1.6; eta = 1.6*0.1 = 0.16; tau = 1.6
#   2: mu^2 = 0.25 - 0.25 = 0: r = 1/0.25 = 4 = S; eta = min(0.3, 0.4) = 0.3, applied gain 3: tau = 4.6 >= 3: PERIOD
#   3: mu^2 = 4.25 - 0.25 = 4: r = 5/4.25 = 20/17; eta_base = 0.05: eta = 1/17; tau = 4.6 + 20/17
#   4: ||g||^2 = nan: blocked, eta and tau stay
#   5: r = 4: eta = 0.2; tau = 4.6 + 20/17 + 4 = 9.776... < 10
#   6: r = 4: eta = 0.2; tau = 13.776... >= 10: FINISHED, the run stops
#   7: stopped: nothing is counted
ADASCALE = dict(
    policy=dict(base_batch=2, scale=4, eta0=0.1, smoothing=0.0, milestones=(3.0,), decay=0.5, horizon=10.0,
                eta_max=0.3),
    steps=[(dict(grad_sq=1.25, trace_var=2.0), "CHECKED", 8, 0.16),
           (dict(grad_sq=0.25, trace_var=2.0), "PERIOD", 8, 0.3),
           (dict(grad_sq=4.25, trace_var=2.0), "CHECKED", 8, 1 / 17),
           (dict(grad_sq=NAN, trace_var=2.0), "NONFINITE", 8, 1 / 17),
           (dict(grad_sq=0.25, trace_var=2.0), "CHECKED", 8, 0.2),
           (dict(grad_sq=0.25, trace_var=2.0), "FINISHED", 8, 0.2),
           (dict(grad_sq=0.25, trace_var=2.0), "NONE", 8, 0.2)],
    progress=[1.6, 4.6, 4.6 + 20 / 17, 4.6 + 20 / 17, 8.6 + 20 / 17, 12.6 + 20 / 17, 12.6 + 20 / 17],
    steps_counted=6,
)

# Increase the batch (Smith et al.), b0 = 128, eta0 = 0.1, factor 5, milestones (256, 512, 10000) samples,
# b_max = 1000: b_k = min(1000, ceil(128*5^k)), eta_k = 0.1*min(1, b_k/(128*5^k)):
#   1: 128 samples: no milestone       2: 256: k = 1, b = 640
#   3: 896 >= 512 but the step diverged: blocked    4: 1536: k = 2, b = min(1000, 3200), eta = 0.1*1000/3200
#   5: 2536: nothing
INCREASE_BATCH = dict(
    policy=dict(b0=128, eta0=0.1, milestones=(256, 512, 10000), factor=5.0, b_max=1000),
    steps=[(dict(), "NONE", 128, 0.1),
           (dict(), "PERIOD", 640, 0.1),
           (dict(finite=False), "NONFINITE", 640, 0.1),
           (dict(), "PERIOD", 1000, 0.03125),
           (dict(), "NONE", 1000, 0.03125)],
)
