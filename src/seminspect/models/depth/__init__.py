"""models/depth"""
