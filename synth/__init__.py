"""maskahand.synth"""
