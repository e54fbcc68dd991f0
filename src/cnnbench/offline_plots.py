"""`dvc plots show` and `dvc plots diff` with no internet. DVC's page loads Vega, Vega-Lite
and Vega-Embed from a CDN, so offline every chart is blank. This writes the HTML template
that .dvc/config names (``plots.html_template``), with the three libraries inlined from
the vl-convert-python package, which the project's setup installs (`make install` runs
this). DVC fills the page's {plot_divs}; the template has no {scripts}, where DVC would
put its CDN links.

    python -m cnnbench.offline_plots
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnbench.files import write_atomic

# relative to .dvc/, as DVC reads plots.html_template
TEMPLATE = "offline_plots.html"

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC plots</title>
    <script type="text/javascript">
    // Vega, Vega-Lite and Vega-Embed __VERSIONS__, from vl-convert-python: no CDN.
    // In a function of their own, so that their names meet none of the page's.
    (function () {
__BUNDLE__
    })();
    </script>
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def page() -> str:
    import vl_convert as vlc

    # DVC's plot templates are Vega-Lite 5 specs: the newest 5.x the package has
    vega_lite = [v for v in vlc.get_vegalite_versions() if v.startswith("5.")][-1]
    versions = f"{vlc.get_vega_version()}, {vega_lite} and {vlc.get_vega_embed_version()}"
    bundle = vlc.javascript_bundle(vl_version=f"v{vega_lite}")
    return PAGE.replace("__VERSIONS__", versions).replace("__BUNDLE__", bundle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dvc-dir", type=Path, default=Path(".dvc"))
    args = parser.parse_args(argv)
    path = args.dvc_dir / TEMPLATE
    text = page()
    write_atomic(path, text)
    print(f"{path}: DVC's plots page with Vega inlined ({len(text) // 1024} KiB), no CDN")
    return 0

if __name__ == "__main__":
    sys.exit(main())
