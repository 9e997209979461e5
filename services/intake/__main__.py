"""`python -m services.intake [serve|migrate]`."""

from services.intake.app import create_app
from shared.serve import serve

if __name__ == "__main__":
    serve(create_app)
