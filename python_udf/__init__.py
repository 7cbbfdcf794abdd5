"""Text features for posts: embed, reduce and cluster post text (see README)."""
