"""Dramatiq on RabbitMQ: the broker, its middleware, the actors, the scheduler and the worker's
health endpoint. Nothing else.

Actors take ids and await one service call; everything they do lives in ``service/``.
"""
