"""Measurements: `speed` (`python -m jaxshrink.bench`: training steps per second beside a
PyTorch peer), `stepbench` (step time and memory of one config), `gradcheck` (autodiff
against finite differences)."""
