"""`python -m services.metrics [serve|migrate]`."""

from services.metrics.app import create_app
from shared.serve import serve

if __name__ == "__main__":
    serve(create_app)
