"""Generated from proto/ by proto/codegen.py; do not edit."""
