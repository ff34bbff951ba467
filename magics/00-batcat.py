"""IPython startup file: load batcat_nb's magics (%batcat_run and friends) in every session.

Copy it into ~/.ipython/profile_default/startup/ (studio-lifecycle.sh does so on SageMaker
Studio). Where batcat_nb is not installed it stays silent; anything else is one line, never an
error that stops the kernel from starting.
"""

try:
    import batcat_nb  # noqa: F401
except ImportError:
    pass
else:
    try:
        get_ipython().extension_manager.load_extension("batcat_nb")  # type: ignore[name-defined]  # noqa: F821
    except Exception as exc:  # a broken install must not break the kernel
        print(f"batcat_nb magics not loaded: {exc}")
