"""Optical flow models (RAFT, PWC-Net): to come."""
