"""`python -m services.followup [serve|migrate]`."""

from shared.serve import serve

if __name__ == "__main__":
    serve("followup")
