"""Generated from proto/ by clients/codegen.py; do not edit."""
