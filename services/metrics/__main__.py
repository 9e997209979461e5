"""`python -m services.metrics [serve|migrate|rebuild]`."""

import sys

from services.metrics.app import create_app
from shared.serve import serve

if __name__ == "__main__":
    if sys.argv[1:2] == ["rebuild"]:
        from services.metrics.rebuild import main

        main(sys.argv[2:])
    else:
        serve(create_app)
