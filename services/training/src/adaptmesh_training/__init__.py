"""adaptmesh_training"""
