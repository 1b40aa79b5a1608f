"""NTT-friendly primes below 2^31 and the small number theory they need."""

from __future__ import annotations

_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)

WORD_BITS = 31  # every RNS prime is below 2^31 so a product fits a uint64


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin; exact for n < 3.3e24 with these bases."""
    if n < 2:
        return False
    for p in _MR_BASES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def nearest_ntt_prime(target: float, two_n: int, exclude=(), limit: int = 1 << WORD_BITS) -> int:
    """The prime q = 1 mod 2N closest to `target`, below `limit`, not in `exclude`.

    Deterministic: ties go to the smaller candidate, so every run builds the
    same chain from the same parameters.
    """
    k0 = int(round((target - 1) / two_n))
    exclude = set(exclude)
    for step in range(0, 1 << 24):
        for k in ((k0 - step, k0 + step) if step else (k0,)):
            q = k * two_n + 1
            if 2 * two_n < q < limit and q not in exclude and is_prime(q):
                return q
    raise ValueError(f"no NTT-friendly prime near {target:.3g} for 2N={two_n}")


def ntt_primes_near(target: float, two_n: int, count: int, exclude=(),
                    limit: int = 1 << WORD_BITS) -> list[int]:
    """The `count` primes q = 1 mod 2N nearest to `target` (for choosing prime groups)."""
    out, exclude = [], set(exclude)
    for _ in range(count):
        try:
            q = nearest_ntt_prime(target, two_n, exclude=exclude | set(out), limit=limit)
        except ValueError:
            break
        out.append(q)
    return out


def largest_ntt_primes(count: int, two_n: int, below: int = 1 << WORD_BITS, exclude=()) -> list[int]:
    out, exclude = [], set(exclude)
    k = (below - 2) // two_n
    while len(out) < count:
        q = k * two_n + 1
        if q <= 2 * two_n:
            raise ValueError(f"not enough NTT-friendly primes below {below} for 2N={two_n}")
        if q not in exclude and is_prime(q):
            out.append(q)
        k -= 1
    return out


def primitive_root_2n(q: int, two_n: int) -> int:
    """A primitive 2N-th root of unity mod q (smallest generator based, deterministic)."""
    phi = q - 1
    factors, m, f = [], phi, 2
    while f * f <= m:
        if m % f == 0:
            factors.append(f)
            while m % f == 0:
                m //= f
        f += 1
    if m > 1:
        factors.append(m)
    for g in range(2, q):
        if all(pow(g, phi // p, q) != 1 for p in factors):
            return pow(g, phi // two_n, q)
    raise ValueError(f"{q} has no generator")
