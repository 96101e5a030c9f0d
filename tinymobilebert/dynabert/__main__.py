"""``python -m tinymobilebert.dynabert RUN [RUN ...]``: the width x depth table of several runs combined."""

from .table import main

main()
