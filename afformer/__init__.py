"""maskahand.afformer"""
