"""Recipient lists: reading files and manual lists, validating, de-duplicating and storing them."""
