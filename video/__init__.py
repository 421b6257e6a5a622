"""maskahand.video"""
