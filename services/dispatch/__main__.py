"""`python -m services.dispatch [serve|migrate]`."""

from services.dispatch.app import create_app
from shared.serve import serve

if __name__ == "__main__":
    serve(create_app)
