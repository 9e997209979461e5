"""`python -m services.dispatch [serve|migrate]`."""

from shared.serve import serve

if __name__ == "__main__":
    serve("dispatch")
