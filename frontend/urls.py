from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from frontend import billing_views, eas_views, token_views, usage_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("team/", views.team, name="team"),
    # usage pages: a member's own, their team's (tenant admins), the operators' dashboard (staff)
    path("usage/", usage_views.my_usage, name="usage"),
    path("team/usage/", usage_views.team_usage, name="team-usage"),
    path("ops/", usage_views.operations, name="ops"),
    path("team/bill/", billing_views.bill_page, name="team-bill"),
    path("services/", eas_views.services_page, name="eas-services"),
    path("services/<str:service_id>/tokens/", eas_views.token_create, name="eas-token-create"),
    path("services/<str:service_id>/tokens/<int:token_id>/revoke/", eas_views.token_revoke, name="eas-token-revoke"),
    path("services/<str:service_id>/delete/", eas_views.service_delete, name="eas-service-delete"),
    path("tokens/", token_views.tokens_page, name="api-tokens"),
    path("tokens/<str:api_token_id>/revoke/", token_views.token_revoke_page, name="api-token-revoke"),
    path("language/", views.set_language, name="set-language"),
    # browsers ask for it on every site; the icon is a static file
    path("favicon.ico", RedirectView.as_view(url=static("frontend/favicon.svg"), permanent=True), name="favicon"),
    path("login/", auth_views.LoginView.as_view(template_name="frontend/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]
