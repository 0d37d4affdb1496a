"""The platform every domain stands on, and the code that composes processes."""
