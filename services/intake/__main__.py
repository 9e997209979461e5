"""`python -m services.intake [serve|migrate]`."""

from shared.serve import serve

if __name__ == "__main__":
    serve("intake")
