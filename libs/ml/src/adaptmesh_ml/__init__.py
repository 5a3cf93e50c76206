"""adaptmesh model code."""
