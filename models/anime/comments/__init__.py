"""Comments (anime.md §4): threaded comments on anime pages with up/down votes.

Modules: `tables` (data, limits, indexes), `shapes` (responses, events, R29's keys),
`access` (what a caller may see; shared checks), `reads` (CM1, CM3, CM4, CM9), `writes` (CM2,
CM5, CM6), `votes` (CM7, CM8, the throttled COMMENT_VOTE).
"""

from models.anime.comments import exports  # noqa: F401  (registers the exporter)
from models.anime.comments.reads import (
    list_anime_comments,
    list_replies,
    list_user_comments,
    permalink,
)
from models.anime.comments.shapes import (
    COMMENT_CREATE,
    COMMENT_DELETE,
    COMMENT_UPDATE,
    COMMENT_VOTE,
    Comment,
    CommentPage,
    Permalink,
    UserCommentPage,
    VoteResult,
    best_key,
    controversy_key,
)
from models.anime.comments.tables import (
    comment,
    comment_report,
    comment_revision,
    comment_vote,
)
from models.anime.comments.votes import UPVOTE_HOOKS, do_report, do_vote
from models.anime.comments.writes import (
    POSTED_HOOKS,
    REPLY_HOOKS,
    do_delete,
    do_edit,
    do_post,
)

__all__ = [
    "COMMENT_CREATE",
    "COMMENT_DELETE",
    "COMMENT_UPDATE",
    "COMMENT_VOTE",
    "POSTED_HOOKS",
    "REPLY_HOOKS",
    "UPVOTE_HOOKS",
    "Comment",
    "CommentPage",
    "Permalink",
    "UserCommentPage",
    "VoteResult",
    "best_key",
    "comment",
    "comment_report",
    "comment_revision",
    "comment_vote",
    "controversy_key",
    "do_delete",
    "do_edit",
    "do_post",
    "do_report",
    "do_vote",
    "list_anime_comments",
    "list_replies",
    "list_user_comments",
    "permalink",
]
