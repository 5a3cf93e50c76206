"""The `adaptmesh` command line."""
