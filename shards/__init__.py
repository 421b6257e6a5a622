"""maskahand.shards"""
