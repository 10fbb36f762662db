"""memmap.rl: mallocGame (memory mapping as a single-player game), its Gymnasium environment
``memmap/MallocGame-v0``, a MuZero-style agent (haiku + mctx + optax), ``memmap-train`` and the
``rl`` solver. See docs/rl.md.

Modules: ``game`` (pure game core), ``observation``, ``env``, ``instances``, ``networks``,
``agent``, ``learner``, ``train``, ``cli``, ``solver``. Importing this package imports nothing
heavy; jax is imported by ``networks``, ``agent``, ``learner`` and ``train`` only.
"""
