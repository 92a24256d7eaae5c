using Broker.Protocol.V1;
using Broker.Server.Core;
using Broker.Server.Security;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;
using global::Grpc.Core;

namespace Broker.Server.Grpc;

/// <summary>
/// The Admin service: each call a translation to its use case in the core (<see cref="TopicAdmin"/>,
/// <see cref="DeadLetters"/>) or to the key ring, and the process's own numbers.
/// </summary>
internal sealed class AdminService(TopicStore store, TopicAdmin admin, DeadLetters deadLetters, KeyRing keys) : Admin.AdminBase
{
    public override async Task<CreateTopicResponse> CreateTopic(CreateTopicRequest request, ServerCallContext context) =>
        new()
        {
            Created = await admin.CreateTopicAsync(AuthInterceptor.CallerOf(context), request.Name, request.IfNotExists,
                ProtoConversions.ToRetention(request.Retention), context.CancellationToken).ConfigureAwait(false),
        };

    public override async Task<UpdateTopicResponse> UpdateTopic(UpdateTopicRequest request, ServerCallContext context)
    {
        var retention = await admin.UpdateRetentionAsync(AuthInterceptor.CallerOf(context), request.Name, ProtoConversions.ToRetention(request.Retention),
            context.CancellationToken).ConfigureAwait(false);
        return new UpdateTopicResponse { Retention = ProtoConversions.ToProto(retention) };
    }

    public override async Task<PurgeTopicResponse> PurgeTopic(PurgeTopicRequest request, ServerCallContext context)
    {
        var result = await admin.PurgeAsync(AuthInterceptor.CallerOf(context), request.Name, context.CancellationToken).ConfigureAwait(false);
        return new PurgeTopicResponse { Purged = (ulong)result.Purged, NextOffset = (ulong)result.NextOffset };
    }

    public override async Task<ResetGroupResponse> ResetGroup(ResetGroupRequest request, ServerCallContext context)
    {
        var target = ProtoConversions.ToStart(request.Position, request.Offset, request.TimeUnixMs);
        long floor = await admin.ResetGroupAsync(AuthInterceptor.CallerOf(context), request.Topic, request.Group, target, context.CancellationToken)
            .ConfigureAwait(false);
        return new ResetGroupResponse { AckFloor = (ulong)floor };
    }

    public override async Task<UpdateGroupResponse> UpdateGroup(UpdateGroupRequest request, ServerCallContext context)
    {
        var policy = await admin.UpdateGroupAsync(AuthInterceptor.CallerOf(context), request.Topic, request.Group,
            ProtoConversions.ToPolicy(request.Settings), context.CancellationToken).ConfigureAwait(false);
        return new UpdateGroupResponse { Settings = ProtoConversions.ToSettings(policy) };
    }

    public override async Task<DeleteGroupResponse> DeleteGroup(DeleteGroupRequest request, ServerCallContext context)
    {
        await admin.DeleteGroupAsync(AuthInterceptor.CallerOf(context), request.Topic, request.Group, request.Force, context.CancellationToken)
            .ConfigureAwait(false);
        return new DeleteGroupResponse();
    }

    public override async Task<DeleteTopicResponse> DeleteTopic(DeleteTopicRequest request, ServerCallContext context)
    {
        await admin.DeleteTopicAsync(AuthInterceptor.CallerOf(context), request.Name, context.CancellationToken).ConfigureAwait(false);
        return new DeleteTopicResponse();
    }

    public override Task<ListTopicsResponse> ListTopics(ListTopicsRequest request, ServerCallContext context) =>
        Task.FromResult(new ListTopicsResponse { Names = { admin.ListTopics(AuthInterceptor.CallerOf(context)) } });

    public override async Task<TopicDescription> DescribeTopic(DescribeTopicRequest request, ServerCallContext context)
    {
        var info = await admin.DescribeAsync(AuthInterceptor.CallerOf(context), request.Name, context.CancellationToken).ConfigureAwait(false);
        return ProtoConversions.ToDescription(info, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
    }

    public override async Task<ListGroupsResponse> ListGroups(ListGroupsRequest request, ServerCallContext context)
    {
        // DescribeAsync's numbers, not the in-memory ones: they include each group's oldest unacknowledged message (one
        // read per group with a backlog), the figure an operator looking for a stuck group wants most.
        var (described, unopened) = await admin.ListGroupsAsync(AuthInterceptor.CallerOf(context), request.Topic, context.CancellationToken)
            .ConfigureAwait(false);
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var response = new ListGroupsResponse { UnopenedTopics = { unopened } };
        foreach (var info in described)
        {
            foreach (var group in info.Groups)
                response.Groups.Add(ProtoConversions.ToListing(info, group, now));
        }
        return response;
    }

    public override async Task<CreateGroupResponse> CreateGroup(CreateGroupRequest request, ServerCallContext context)
    {
        var start = ProtoConversions.ToStart(request.Start, request.StartOffset, request.StartTimeUnixMs);
        bool created = await admin.CreateGroupAsync(AuthInterceptor.CallerOf(context), request.Topic, request.Group, start,
            ProtoConversions.ToPolicy(request.Settings), context.CancellationToken).ConfigureAwait(false);
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
        int max = request.MaxMessages == 0 ? 10 : (int)Math.Min(request.MaxMessages, int.MaxValue);
        var messages = await admin.PeekAsync(AuthInterceptor.CallerOf(context), request.Topic, (long)Math.Min(request.FromOffset, long.MaxValue), max,
            context.CancellationToken).ConfigureAwait(false);
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
