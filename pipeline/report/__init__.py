"""Reporting: mergeable label-coverage counts and their JSON, Markdown and HTML views."""
