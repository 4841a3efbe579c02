"""The SCAS paper's own figures (Yeshwanth V et al., 2020, Table 1), for the report to show
beside ours. Params in parameters and MACs per image, as printed (2 or 3 significant digits in
millions); the reductions as printed, not recomputed."""
import collections

PaperRow = collections.namedtuple(
    "PaperRow", "baseline_params params params_reduction baseline_macs macs macs_reduction")

M = 1e6
TABLE1 = {
    ("cifar10", "enas_macro"): PaperRow(2.35 * M, 0.50 * M, 4.7, 395.35 * M, 60.73 * M, 6.5),
    ("cifar10", "enas_micro"): PaperRow(2.40 * M, 0.33 * M, 7.3, 162.84 * M, 20.41 * M, 8.0),
    ("cifar10", "darts"): PaperRow(0.61 * M, 0.16 * M, 3.9, 1542.26 * M, 329.70 * M, 4.7),
    ("cifar10", "smash"): PaperRow(2.72 * M, 0.30 * M, 9.1, 567.43 * M, 57.90 * M, 9.8),
    ("cifar100", "enas_macro"): PaperRow(2.76 * M, 1.40 * M, 2.0, 314.94 * M, 181.92 * M, 1.7),
    ("cifar100", "enas_micro"): PaperRow(3.05 * M, 1.03 * M, 3.0, 218.54 * M, 77.98 * M, 2.8),
    ("cifar100", "darts"): PaperRow(0.36 * M, 0.06 * M, 5.6, 109.91 * M, 57.77 * M, 1.9),
    ("cifar100", "smash"): PaperRow(3.14 * M, 0.26 * M, 12.3, 759.66 * M, 115.56 * M, 6.6),
    ("mnist", "enas_macro"): PaperRow(2.48 * M, 0.21 * M, 11.6, 221.46 * M, 23.36 * M, 9.5),
    ("mnist", "enas_micro"): PaperRow(2.84 * M, 0.26 * M, 11.1, 229.26 * M, 11.89 * M, 19.3),
    ("mnist", "darts"): PaperRow(0.62 * M, 0.10 * M, 6.4, 1620.15 * M, 312.35 * M, 5.2),
    ("mnist", "smash"): PaperRow(2.58 * M, 0.24 * M, 10.8, 658.34 * M, 45.67 * M, 14.4),
}
