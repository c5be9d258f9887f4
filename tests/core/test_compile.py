"""``streamproc.core._compile``: what a compiled module compiles in from other files."""

from __future__ import annotations

import pytest

from streamproc.core import _compile
from streamproc.core.protocol import messages
from streamproc.core.signal import _kernels, state


class TestBuiltFrom:
    """``built_from`` / ``check_built_from``: numba's cache sees one file, the digest the rest."""

    @pytest.mark.parametrize("module", _compile.KERNEL_MODULES)
    def test_every_compiled_module_declares_what_it_is_built_from(self, module: str) -> None:
        """Each compiled module's ``BUILT_FROM`` is the digest of its imports today."""
        mod = __import__(module, fromlist=["BUILT_FROM"])
        assert _compile.built_from(module) == mod.BUILT_FROM

    def test_a_slot_moved_in_the_state_changes_the_digest(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A packed-state slot number the kernels compile in is part of the digest."""
        before = _compile.built_from(_kernels.__name__)
        monkeypatch.setattr(_kernels, "B_MAP", state.B_MAP + 1)
        assert _compile.built_from(_kernels.__name__) != before

    def test_a_rule_changed_in_the_protocol_changes_the_digest(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A constant of a rule compiled in from another file (``chunk_fault``) counts."""
        before = _compile.built_from(_kernels.__name__)
        monkeypatch.setattr(messages, "MAX_SAMPLES_PER_CHUNK", messages.MAX_SAMPLES_PER_CHUNK + 1)
        assert _compile.built_from(_kernels.__name__) != before

    def test_a_stale_declaration_refuses_with_the_new_value(self) -> None:
        """The error names the module and the value its ``BUILT_FROM`` must now hold."""
        actual = _compile.built_from(_kernels.__name__)
        with pytest.raises(_compile.StaleKernelError) as err:
            _compile.check_built_from(_kernels.__name__, "0" * 16)
        assert err.value.module == _kernels.__name__
        assert err.value.actual == actual
        assert f'BUILT_FROM = "{actual}"' in str(err.value)

    def test_the_module_own_numbers_are_left_to_numba(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A number defined in the compiled module's own file is not in the digest
        (numba's cache is checked against that file already)."""
        own = "STEP_BEATS"  # (defined in _kernels, returned by its compiled loops)
        assert own in _compile._assigned(_kernels)  # noqa: SLF001 - the digest's own-name rule
        before = _compile.built_from(_kernels.__name__)
        monkeypatch.setattr(_kernels, own, getattr(_kernels, own) + 1)
        assert _compile.built_from(_kernels.__name__) == before
