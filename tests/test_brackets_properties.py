"""Property-based checks of the exact brackets over arbitrary gradients (hypothesis).

Catches: degeneracy or definiteness failures that only appear for particular gradient
magnitudes or directions (tiny or huge norms, near-parallel dE and dS), which fixed random
draws can miss.
"""

import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from sp_dynamics.brackets import BasisBracket, ProjectionBracket

torch.manual_seed(0)
BRACKETS = {n: (ProjectionBracket(n).double(), BasisBracket(n).double()) for n in range(2, 6)}


@st.composite
def gradients(draw):
    n = draw(st.integers(2, 5))
    vec = st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=n, max_size=n)
    scale_e = draw(st.sampled_from([1e-4, 1.0, 1e3]))
    scale_s = draw(st.sampled_from([1e-4, 1.0, 1e3]))
    dE = torch.tensor(draw(vec), dtype=torch.float64) * scale_e
    dS = torch.tensor(draw(vec), dtype=torch.float64) * scale_s
    # Domain of the exactness claim: gradient norms >= 1e-9. The projection's relative residual
    # is about eps / |grad|^2 with the float64 guard eps = 1e-30, i.e. 1e-12 at 1e-9 but 1e-10 at
    # 1e-10, which is the bound below itself (hypothesis found dE = (0, 1e-10) failing by a factor
    # of 2). Vanishing gradients are covered by test_vanishing_gradient_is_finite.
    assume(float(dE.norm()) >= 1e-9 and float(dS.norm()) >= 1e-9)
    return n, dE, dS


@settings(max_examples=150, deadline=None)
@given(gradients())
@example((2, torch.tensor([0.0, 1e3], dtype=torch.float64), torch.tensor([1e-9, 0.0], dtype=torch.float64)))
def test_exact_brackets_for_arbitrary_gradients(case):
    n, dE, dS = case
    x = torch.zeros(n, dtype=torch.float64)
    for br in BRACKETS[n]:
        if isinstance(br, BasisBracket):
            # L and M of the basis bracket are homogeneous of degree 2 in dS and dE, so its
            # relative residuals are scale-free; magnitudes matter only to the projection's
            # eps guard. Unit gradients keep ||L|| and ||M|| comparable in the bound below.
            dE, dS = dE / dE.norm(), dS / dS.norm()
        with torch.no_grad():
            L, M = br.matrices(x, dE, dS)
            F = br.field(x, dE, dS)
        size = float(torch.linalg.matrix_norm(L, 2) + torch.linalg.matrix_norm(M, 2)) + 1e-300
        assert (L + L.T).abs().max() <= 1e-12 * max(1.0, size)
        assert torch.linalg.eigvalsh(M).min() >= -1e-12 * max(1.0, size)
        # relative degeneracy: zero up to round-off whatever the gradients' size
        assert (L @ dS).norm() <= 1e-10 * size * dS.norm() + 1e-300
        assert (M @ dE).norm() <= 1e-10 * size * dE.norm() + 1e-300
        # dS.F = dS.L dE + dS.M dS: the first term is -(L dS).dE, as small as the degeneracy
        # residual allowed above times |dE|, so the bound scales with |dS| |dE| as well
        # (hypothesis found dE = (0, 1e3), dS = (1e-9, 0): dS.F = -6e-19, inside that residual)
        allowed = 1e-10 * size * float(dS.norm() * dE.norm()) + 1e-12 * max(1.0, size) * float(dS.norm()) ** 2
        assert float(dS @ F) >= -allowed
