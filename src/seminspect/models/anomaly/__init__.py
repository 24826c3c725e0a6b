"""models/anomaly"""
