"""Exception type of the refinement stage."""

from __future__ import annotations

from posenet_core.errors import PoseNetError

__all__ = ["RefineError"]


class RefineError(PoseNetError):
    """Invalid refinement parameters or call arguments (names the value and what is allowed).

    A frame that simply cannot be refined (no texture, too few matches...) is not an error: it
    gives a :class:`posenet_core.refine.RefinementResult` with a failure reason.
    """
