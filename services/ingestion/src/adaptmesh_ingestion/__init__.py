"""adaptmesh_ingestion"""
