using Broker.Protocol.V1;
using Broker.Server.Core;
using Broker.Server.Security;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;
using global::Grpc.Core;

namespace Broker.Server.Grpc;

/// <summary>Topic administration, each call a thin translation to <see cref="TopicStore"/>, and the process's own numbers.</summary>
internal sealed class AdminService(TopicStore store, DeadLetters deadLetters, KeyRing keys) : Admin.AdminBase
{
    public override async Task<CreateTopicResponse> CreateTopic(CreateTopicRequest request, ServerCallContext context) =>
        new()
        {
            Created = await store.CreateTopicAsync(request.Name, request.IfNotExists, context.CancellationToken,
                ProtoConversions.ToRetention(request.Retention)).ConfigureAwait(false),
        };

    public override async Task<UpdateTopicResponse> UpdateTopic(UpdateTopicRequest request, ServerCallContext context)
    {
        if (request.Retention is null)
            throw BrokerStatus.InvalidRequest("UpdateTopic needs a retention (both limits 0 to keep everything)");
        var retention = ProtoConversions.ToRetention(request.Retention)!;
        await store.UpdateRetentionAsync(request.Name, retention, context.CancellationToken).ConfigureAwait(false);
        return new UpdateTopicResponse { Retention = ProtoConversions.ToProto(retention) };
    }

    public override async Task<PurgeTopicResponse> PurgeTopic(PurgeTopicRequest request, ServerCallContext context)
    {
        var topic = await store.GetTopicAsync(request.Name, context.CancellationToken).ConfigureAwait(false);
        var result = await topic.PurgeAsync(context.CancellationToken).ConfigureAwait(false);
        return new PurgeTopicResponse { Purged = (ulong)result.Purged, NextOffset = (ulong)result.NextOffset };
    }

    public override async Task<ResetGroupResponse> ResetGroup(ResetGroupRequest request, ServerCallContext context)
    {
        var topic = await store.GetTopicAsync(request.Topic, context.CancellationToken).ConfigureAwait(false);
        var target = ProtoConversions.ToStart(request.Position, request.Offset, request.TimeUnixMs);
        long floor = await topic.ResetGroupAsync(request.Group, target, context.CancellationToken).ConfigureAwait(false);
        return new ResetGroupResponse { AckFloor = (ulong)floor };
    }

    public override async Task<UpdateGroupResponse> UpdateGroup(UpdateGroupRequest request, ServerCallContext context)
    {
        var topic = await store.GetTopicAsync(request.Topic, context.CancellationToken).ConfigureAwait(false);
        var policy = await topic.UpdateGroupPolicyAsync(request.Group, ProtoConversions.ToPolicy(request.Settings), context.CancellationToken)
            .ConfigureAwait(false);
        return new UpdateGroupResponse { Settings = ProtoConversions.ToSettings(policy) };
    }

    public override async Task<DeleteGroupResponse> DeleteGroup(DeleteGroupRequest request, ServerCallContext context)
    {
        var topic = await store.GetTopicAsync(request.Topic, context.CancellationToken).ConfigureAwait(false);
        await topic.DeleteGroupAsync(request.Group, request.Force, context.CancellationToken).ConfigureAwait(false);
        return new DeleteGroupResponse();
    }

    public override async Task<DeleteTopicResponse> DeleteTopic(DeleteTopicRequest request, ServerCallContext context)
    {
        await store.DeleteTopicAsync(request.Name, context.CancellationToken).ConfigureAwait(false);
        return new DeleteTopicResponse();
    }

    public override Task<ListTopicsResponse> ListTopics(ListTopicsRequest request, ServerCallContext context)
    {
        var caller = AuthInterceptor.CallerOf(context);
        return Task.FromResult(new ListTopicsResponse { Names = { store.ListTopics().Where(caller.Sees) } });
    }

    public override async Task<TopicDescription> DescribeTopic(DescribeTopicRequest request, ServerCallContext context)
    {
        var topic = await store.GetTopicAsync(request.Name, context.CancellationToken).ConfigureAwait(false);
        var info = await topic.DescribeAsync(context.CancellationToken).ConfigureAwait(false);
        return ProtoConversions.ToDescription(info, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
    }

    public override async Task<ListGroupsResponse> ListGroups(ListGroupsRequest request, ServerCallContext context)
    {
        var response = new ListGroupsResponse();
        if (request.Topic.Length > 0)
        {
            // One topic named: the caller asked for it, so it is opened like DescribeTopic opens it (NOT_FOUND when missing).
            var named = await store.GetTopicAsync(request.Topic, context.CancellationToken).ConfigureAwait(false);
            await AddGroupsAsync(response, named, context.CancellationToken).ConfigureAwait(false);
            return response;
        }
        // Every topic: only the open ones are described. Opening a topic recovers its logs from disk, which a listing
        // must not do to every topic on disk (the web view makes the same choice); the rest are named, for a second call.
        // With API keys, only topics the key administers: their groups' numbers are what DescribeTopic would show it.
        var caller = AuthInterceptor.CallerOf(context);
        var open = store.OpenTopics().ToDictionary(topic => topic.Name, StringComparer.Ordinal);
        foreach (string name in store.ListTopics().Where(name => caller.Can(Permission.Admin, name)))
        {
            if (!open.TryGetValue(name, out var topic))
            {
                response.UnopenedTopics.Add(name);
                continue;
            }
            try
            {
                await AddGroupsAsync(response, topic, context.CancellationToken).ConfigureAwait(false);
            }
            catch (BrokerException) when (!store.ListTopics().Contains(name, StringComparer.Ordinal))
            {
                // Deleted since OpenTopics: it has no groups to list. A topic that failed still exists, and its error is the answer.
            }
        }
        return response;
    }

    private static async Task AddGroupsAsync(ListGroupsResponse response, Topic topic, CancellationToken cancellationToken)
    {
        // DescribeAsync, not the in-memory numbers: it finds each group's oldest unacknowledged message (one read per
        // group with a backlog), the figure an operator looking for a stuck group wants most.
        var info = await topic.DescribeAsync(cancellationToken).ConfigureAwait(false);
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        foreach (var group in info.Groups)
            response.Groups.Add(ProtoConversions.ToListing(info, group, now));
    }

    public override async Task<CreateGroupResponse> CreateGroup(CreateGroupRequest request, ServerCallContext context)
    {
        var topic = await store.GetTopicAsync(request.Topic, context.CancellationToken).ConfigureAwait(false);
        var start = ProtoConversions.ToStart(request.Start, request.StartOffset, request.StartTimeUnixMs);
        var (_, created) = await topic.GetOrCreateGroupAsync(request.Group, start, ProtoConversions.ToPolicy(request.Settings), context.CancellationToken)
            .ConfigureAwait(false);
        if (!created && !request.IfNotExists)
            throw BrokerStatus.ToRpcException(BrokerErrorCode.GroupAlreadyExists, $"group '{request.Group}' of topic '{request.Topic}' already exists");
        return new CreateGroupResponse { Created = created };
    }

    public override async Task<RedriveResponse> Redrive(RedriveRequest request, ServerCallContext context)
    {
        var result = await deadLetters.RedriveAsync(AuthInterceptor.CallerOf(context), request.DeadLetterTopic,
            (int)Math.Min(request.MaxMessages, int.MaxValue), request.TargetTopic, context.CancellationToken).ConfigureAwait(false);
        return new RedriveResponse { Moved = (uint)result.Moved, Skipped = (uint)result.Skipped };
    }

    public override async Task<PeekResponse> Peek(PeekRequest request, ServerCallContext context)
    {
        int max = request.MaxMessages == 0 ? 10 : (int)request.MaxMessages;
        if (max > 1000)
            throw BrokerStatus.InvalidRequest($"max_messages must be 1 to 1000; this request asks for {request.MaxMessages}");
        var topic = await store.GetTopicAsync(request.Topic, context.CancellationToken).ConfigureAwait(false);
        var messages = await topic.PeekAsync((long)Math.Min(request.FromOffset, long.MaxValue), max, context.CancellationToken).ConfigureAwait(false);
        var response = new PeekResponse();
        foreach (var message in messages)
            response.Messages.Add(ProtoConversions.ToDelivery(request.Topic, new GroupDelivery(message, 0, 0)));
        return response;
    }

    public override Task<CreateApiKeyResponse> CreateApiKey(CreateApiKeyRequest request, ServerCallContext context)
    {
        var (key, token) = keys.Create(request.Name, request.Grants, request.Sqs, (int)Math.Min(request.MaxPublishRate, int.MaxValue));
        return Task.FromResult(new CreateApiKeyResponse { Key = ToProto(key), Token = token });
    }

    public override Task<ListApiKeysResponse> ListApiKeys(ListApiKeysRequest request, ServerCallContext context) =>
        Task.FromResult(new ListApiKeysResponse { Keys = { keys.List().Select(ToProto) } });

    public override Task<RevokeApiKeyResponse> RevokeApiKey(RevokeApiKeyRequest request, ServerCallContext context)
    {
        keys.Revoke(request.Id);
        return Task.FromResult(new RevokeApiKeyResponse());
    }

    private static ApiKey ToProto(ApiKeyRecord key) => new()
    {
        Id = key.Id,
        Name = key.Name,
        Grants = { key.Grants },
        CreatedUnixMs = key.CreatedUnixMs,
        Sqs = key.SigningSecret is not null,
        MaxPublishRate = (uint)key.MaxPublishRate,
    };

    public override Task<ServerStats> GetServerStats(GetServerStatsRequest request, ServerCallContext context)
    {
        var stats = ProcessStats.Capture();
        stats.OpenTopics = (uint)store.OpenTopicCount;
        return Task.FromResult(stats);
    }
}
