from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from frontend import billing_views, eas_views, files_views, team_views, token_views, usage_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("team/", team_views.team, name="team"),
    path("team/members/<str:member>/", team_views.member, name="team-member"),
    path("team/members/<str:member>/remove/", team_views.member_remove_view, name="team-member-remove"),
    path("team/members/<str:member>/invite/", team_views.member_invite_view, name="team-member-invite"),
    path("team/tokens/", team_views.token_create_view, name="team-token-create"),
    path("team/tokens/<str:api_token_id>/revoke/", team_views.token_revoke_view, name="team-token-revoke"),
    path("team/rules/", team_views.rules, name="team-rules"),
    path("team/rules/<str:rule_id>/delete/", team_views.rule_delete_view, name="team-rule-delete"),
    path("team/jobs/", team_views.jobs, name="team-jobs"),
    path("team/audit/", team_views.audit, name="team-audit"),
    path("invite/<str:token>/", team_views.invitation, name="invite"),
    # usage pages: a member's own, their team's (tenant admins), the operators' dashboard (staff)
    path("usage/", usage_views.my_usage, name="usage"),
    path("team/usage/", usage_views.team_usage, name="team-usage"),
    path("ops/", usage_views.operations, name="ops"),
    path("team/bill/", billing_views.bill_page, name="team-bill"),
    path("services/", eas_views.services_page, name="eas-services"),
    path("services/<str:service_id>/tokens/", eas_views.token_create, name="eas-token-create"),
    path("services/<str:service_id>/tokens/<int:token_id>/revoke/", eas_views.token_revoke, name="eas-token-revoke"),
    path("services/<str:service_id>/delete/", eas_views.service_delete, name="eas-service-delete"),
    path("files/", files_views.files_page, name="files"),  # the FileBrowser (its API: /api/v1/files/…)
    path("tokens/", token_views.tokens_page, name="api-tokens"),
    path("tokens/<str:api_token_id>/revoke/", token_views.token_revoke_page, name="api-token-revoke"),
    path("language/", views.set_language, name="set-language"),
    # browsers ask for it on every site; the icon is a static file
    path("favicon.ico", RedirectView.as_view(url=static("frontend/favicon.svg"), permanent=True), name="favicon"),
    path("login/", auth_views.LoginView.as_view(template_name="frontend/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]
