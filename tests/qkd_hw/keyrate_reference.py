"""Independent high-precision reference of the key-rate closed forms (``decimal``, 120 digits).

The textbook forms of Laudenbach 2018 / Fossier 2009, ``l^2 = (A +- sqrt(A^2 - 4B))/2``,
evaluated as written: 120 digits absorb their cancellations (at most ~70 digits inside the
accepted domain), so the result is exact to far below float64 rounding. Inputs are converted
exactly (``Decimal(float)``).
"""

from __future__ import annotations

from decimal import Decimal, localcontext

PREC = 120


def _g(lam: Decimal) -> Decimal:
    """``G(l) = g((l-1)/2)`` in bits."""
    x = (lam - 1) / 2
    if x <= 0:
        return Decimal(0)
    ln2 = Decimal(2).ln()
    return ((x + 1) * (x + 1).ln() - x * x.ln()) / ln2


def _pair(a: Decimal, b: Decimal) -> tuple[Decimal, Decimal]:
    # exactly 0 for a degenerate pair (l1 = l2, e.g. the pure state's l3 = l4 = 1), where the
    # last of the 120 digits may make it negative
    disc = max(a * a - 4 * b, Decimal(0)).sqrt()
    return ((a + disc) / 2).sqrt(), ((a - disc) / 2).sqrt()


def reference(va: float, T: float, xi: float, eta: float, vel: float, beta: float,
              detection: str) -> dict[str, float]:
    """``K, I_AB, chi_BE`` (bits) and the eigenvalues ``l1..l4``, rounded to float at the end."""
    with localcontext() as ctx:
        ctx.prec = PREC
        va, T, xi, eta, vel, beta = (Decimal(float(v)) for v in (va, T, xi, eta, vel, beta))
        V = va + 1
        chi_line = 1 / T - 1 + xi
        het = detection == "heterodyne"
        chi = (2 - eta + 2 * vel) / eta if het else (1 - eta + vel) / eta
        chi_tot = chi_line + chi / T
        factor = Decimal(1) if detection == "heterodyne" else Decimal("0.5")
        i_ab = factor * ((V + chi_tot) / (1 + chi_tot)).ln() / Decimal(2).ln()
        A = V * V * (1 - 2 * T) + 2 * T + T * T * (V + chi_line) ** 2
        B = T * T * (V * chi_line + 1) ** 2
        sb = B.sqrt()
        den = T * (V + chi_tot)
        if detection == "heterodyne":
            C = (A * chi * chi + B + 1 + 2 * chi * (V * sb + T * (V + chi_line))
                 + 2 * T * (V * V - 1)) / den**2
            D = ((V + sb * chi) / den) ** 2
        else:
            C = (A * chi + V * sb + T * (V + chi_line)) / den
            D = sb * (V + sb * chi) / den
        l1, l2 = _pair(A, B)
        l3, l4 = _pair(C, D)
        chi_be = _g(l1) + _g(l2) - _g(l3) - _g(l4)
        return dict(k=float(beta * i_ab - chi_be), i_ab=float(i_ab), chi_be=float(chi_be),
                    lams=tuple(float(x) for x in (l1, l2, l3, l4)))
