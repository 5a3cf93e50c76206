"""adaptmesh_serving"""
