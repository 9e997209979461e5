"""`python -m services.followup [serve|migrate]`."""

from services.followup.app import create_app
from shared.serve import serve

if __name__ == "__main__":
    serve(create_app)
