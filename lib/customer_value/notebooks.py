"""Execute the analyst notebooks (notebooks/*.ipynb, stored without outputs) on a real Jupyter kernel.

    python -m customer_value.notebooks [--conf conf/local.yaml] [--set key=value ...] [--out FOLDER]

Used by `make notebooks` after `make demo`, and by the end-to-end tests on the generated shop: a cell that fails
fails the run, naming the notebook and the cell. The executed copies, with their outputs and plots, go to
`--out` (default: `notebooks/` in the report folder, `<storage.root>/reports/notebooks`); the sources stay
output-free.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


class NotebookFailed(RuntimeError):
    pass


def execute(notebook: Path, out_dir: Path | None, conf: str = "conf/local.yaml", overrides: list[str] = (),
            timeout: int = 900) -> Path | None:
    """Run every cell of `notebook` from the repository root with this configuration; write the executed copy."""
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    book = nbformat.read(notebook, as_version=4)
    env = {"CUSTOMER_VALUE_CONF": conf, "CUSTOMER_VALUE_SET": ";".join(overrides),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)          # the kernel inherits this process's environment
    try:
        # IPC sockets, not TCP: the kernel is local, and TCP makes it warn about unencrypted traffic
        manager = KernelManager(kernel_name="python3", transport="ipc")
        try:
            NotebookClient(book, km=manager, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(ROOT)}}).execute()
        finally:
            if manager.has_kernel:
                manager.shutdown_kernel(now=True)
    except CellExecutionError as e:
        raise NotebookFailed(f"{notebook.name}: a cell failed:\n{e}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if out_dir is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / notebook.name
    nbformat.write(book, target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conf", default="conf/local.yaml")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--out", default=None, help="Folder for the executed copies.")
    args = parser.parse_args()
    from customer_value.config import load_config
    from customer_value.landing import under_root

    cfg = load_config(args.conf, args.overrides)
    out = Path(args.out or Path(under_root(cfg, cfg.backtest.report_dir)) / "notebooks")
    for nb in sorted(NOTEBOOKS.glob("*.ipynb")):
        print(f"[notebooks] {nb.name}: executed -> {execute(nb, out, args.conf, args.overrides)}", flush=True)


if __name__ == "__main__":
    main()
