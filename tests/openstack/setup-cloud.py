"""klb's fixtures on the local OpenStack (idempotent): the klb service user (admin in the
service project, as Octavia's), the LB image (tagged klb-lb-image) and a flavor with a numeric
id (42, as the seed's base_flavor_id), a tenant project with member and reader users.
Networks and subnets are made by each test (their CIDRs follow the test's address plan)."""
import os
import openstack

c = openstack.connect(auth_url='http://127.0.0.1:15000/v3', username='admin', password='secretadmin',
                      project_name='admin', user_domain_name='Default', project_domain_name='Default',
                      region_name='RegionOne')
idc = c.identity
service = idc.find_project('service')
admin_role = idc.find_role('admin')
member_role = idc.find_role('member')
reader_role = idc.find_role('reader')
klb = idc.find_user('klb', domain_id='default') or idc.create_user(
    name='klb', password='klbpass', domain_id='default', default_project_id=service.id)
idc.assign_project_role_to_user(service, klb, admin_role)
tenant = idc.find_project('klbtenant') or idc.create_project(name='klbtenant', domain_id='default')
other = idc.find_project('klbother') or idc.create_project(name='klbother', domain_id='default')
for name, project, role in (('klbmember', tenant, member_role), ('klbreader', tenant, reader_role),
                            ('klbother', other, member_role)):
    u = idc.find_user(name, domain_id='default') or idc.create_user(
        name=name, password='userpass', domain_id='default', default_project_id=project.id)
    idc.assign_project_role_to_user(project, u, role)
    if role is member_role:
        idc.assign_project_role_to_user(project, u, reader_role)
img = c.image.find_image('klb-lb')
if img is None:
    img = c.image.create_image(name='klb-lb', data=os.urandom(1024), disk_format='raw',
                               container_format='bare', visibility='public')
if 'klb-lb-image' not in (img.tags or []):
    c.image.add_tag(img, 'klb-lb-image')
if c.compute.find_flavor('42') is None:
    c.compute.create_flavor(name='klb.lb', id='42', ram=128, vcpus=1, disk=1)
print('klb fixtures ready: image', img.id, 'flavor 42, user klb, projects klbtenant/klbother')
