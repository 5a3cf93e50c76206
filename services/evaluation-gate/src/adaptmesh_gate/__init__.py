"""adaptmesh_gate"""
