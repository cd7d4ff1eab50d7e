"""hubd: the software of a community-security ward hub."""

__version__ = "0.1.0"
