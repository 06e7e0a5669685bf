"""Type stubs for the Rust extension ``duckpacs._core`` (crate ``duckpacs-py``)."""

__version__: str
"""Version of the duckpacs-core crate."""
BUILD_PROFILE: str
"""``"release"`` or ``"debug"``: how the extension was compiled."""
RUSTC_VERSION: str
"""The ``rustc --version`` line of the compiler that built the extension."""
