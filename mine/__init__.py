"""maskahand.mine"""
