using Broker.Protocol.V1;
using Broker.Storage.Topics;
using global::Grpc.Core;

namespace Broker.Server.Grpc;

/// <summary>Topic administration. Each call is a thin translation to <see cref="TopicStore"/>.</summary>
internal sealed class AdminService(TopicStore store) : Admin.AdminBase
{
    public override async Task<CreateTopicResponse> CreateTopic(CreateTopicRequest request, ServerCallContext context) =>
        new() { Created = await store.CreateTopicAsync(request.Name, request.IfNotExists, context.CancellationToken).ConfigureAwait(false) };

    public override async Task<DeleteTopicResponse> DeleteTopic(DeleteTopicRequest request, ServerCallContext context)
    {
        await store.DeleteTopicAsync(request.Name, context.CancellationToken).ConfigureAwait(false);
        return new DeleteTopicResponse();
    }

    public override Task<ListTopicsResponse> ListTopics(ListTopicsRequest request, ServerCallContext context) =>
        Task.FromResult(new ListTopicsResponse { Names = { store.ListTopics() } });

    public override async Task<TopicDescription> DescribeTopic(DescribeTopicRequest request, ServerCallContext context)
    {
        var info = await store.GetTopic(request.Name).DescribeAsync(context.CancellationToken).ConfigureAwait(false);
        return ProtoConversions.ToDescription(info);
    }
}
