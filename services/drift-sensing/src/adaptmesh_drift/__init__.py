"""adaptmesh_drift"""
