"""maskahand.detector"""
