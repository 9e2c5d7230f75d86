"""Tiny from-scratch architectures and their pretraining."""
